"""Writers turn prompts into long outputs by asking the engine; they never build clients."""
