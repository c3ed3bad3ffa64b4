//! host adapter (todo)
