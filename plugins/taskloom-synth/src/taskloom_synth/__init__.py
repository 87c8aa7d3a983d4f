"""taskloom-synth: Magpie, conversations, samplers and personas, tool-calling data."""
