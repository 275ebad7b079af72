"""buildllm: the library that the book *Build a Large Language Model from Scratch* builds.

One module per concept, each explained by one chapter:

========================  ====================================================
module                    chapter
========================  ====================================================
``buildllm.data``         Preface (corpus), Training on a CPU (batches)
``buildllm.repro``        Preface (every chapter's first cell)
``buildllm.tokenizer``    Tokens
``buildllm.files``        Tokens (writing a file atomically)
``buildllm.embeddings``   Embeddings and positional encoding
``buildllm.attention``    Attention
``buildllm.layers``       The GPT model; From GPT-2 to today's LLMs
``buildllm.model``        The GPT model; From GPT-2 to today's LLMs
``buildllm.convert``      The GPT model (Hugging Face GPT-2 import and export)
``buildllm.train``        Training on a CPU
``buildllm.checkpoint``   Training on a CPU
``buildllm.generate``     Generating text
``buildllm.cli``          How this book is built (the command line)
========================  ====================================================
"""

__version__ = "0.1.0"
