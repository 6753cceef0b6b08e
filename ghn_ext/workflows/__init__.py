"""What a user runs: GHN training, scoring, search, final training, anytime prediction, the demo."""
