"""The agent's two tools, search and visit, and their schemas (the one place prompts and filters read them)."""

from __future__ import annotations

# Schemas in the shape WebDancer's prompt lists them (name, description, JSON-schema parameters).
TOOL_SCHEMAS: list[dict] = [
    {
        "name": "search",
        "description": "Performs batched web searches: supply an array 'query'; the tool retrieves the top 10 "
                       "results for each query in one call.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Array of query strings. Include multiple complementary search queries in a "
                                   "single call.",
                }
            },
            "required": ["query"],
        },
    },
    {
        "name": "visit",
        "description": "Visit webpage(s) and return the summary of the content.",
        "parameters": {
            "type": "object",
            "properties": {
                "url": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The URL(s) of the webpage(s) to visit. Can be a single URL or an array of URLs.",
                },
                "goal": {"type": "string", "description": "The specific information goal for visiting webpage(s)."},
            },
            "required": ["url", "goal"],
        },
    },
]
TOOL_NAMES = tuple(t["name"] for t in TOOL_SCHEMAS)
REQUIRED_ARGS = {t["name"]: tuple(t["parameters"]["required"]) for t in TOOL_SCHEMAS}
