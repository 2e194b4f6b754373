//! gemini wire types.
