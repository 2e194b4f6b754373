//! anthropic wire types.
