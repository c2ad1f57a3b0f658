"""The torch model of CP-LLM (needs the torch extra)."""
