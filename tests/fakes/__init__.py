"""Test doubles that speak real protocols (a chat-completions HTTP server) and helpers for
agent tests."""
