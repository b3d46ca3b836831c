//! Defensive reader for the zip container written by `torch.save`. (Being written.)
