//! In-place upgrade. (being written)
