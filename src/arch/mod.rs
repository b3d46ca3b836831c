//! Architecture catalog and version inference. (Being written.)
