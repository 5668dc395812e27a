//! herd-epp
