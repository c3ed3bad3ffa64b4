//! Scenario tests of the flow.
