//! Tests for ccci-abradir live here.
