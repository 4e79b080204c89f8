//! Version-aware schema migrations. (Skeleton: being written.)
