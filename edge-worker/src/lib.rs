//! Tollbooth edge worker.
