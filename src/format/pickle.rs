//! Pickle VM that never executes code. (Being written.)
