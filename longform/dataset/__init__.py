"""What leaves the corpus as training data: the TRL export with its card, relabeled lengths and
decontamination against evaluation prompts."""
