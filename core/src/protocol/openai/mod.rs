//! openai wire types.
