//! Tests for ccci-state live here.
