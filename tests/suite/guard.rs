//! Tests for ccci-guard live here.
