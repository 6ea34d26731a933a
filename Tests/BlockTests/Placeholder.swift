// Tests for this component arrive with its issue.
