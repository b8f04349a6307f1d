//! Tests for ccci-janitor live here.
