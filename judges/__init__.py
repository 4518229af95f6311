"""Judges measure and score what writers produced; they ask the engine for any model call."""
