"""kb inside the frameworks people build assistants with: LangChain (:mod:`kb.integrations.langchain`)
and LlamaIndex (:mod:`kb.integrations.llamaindex`) retrievers, in-process on an index or over HTTP
on a ``kb serve``."""
