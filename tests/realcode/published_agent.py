"""agent-attention-pytorch: AgentSelfAttention
(agent_attention_pytorch/agent_attention_pytorch.py), 16 agent tokens, 2
heads of 16, talking heads, in 2 pre-norm layers (dim 32).

Agent attention: learned agent tokens A (16 per head) attend to the keys,
softmax(A·Kᵀ) (16 × N), and gather V into 16 agent values; the queries
attend to the agents, softmax(Q·Aᵀ) (N × 16), and read those values.  A 1×1
convolution over the heads (talking heads) mixes each pair's weights across
heads between each softmax and its product.  No N × N scores: two dense
attentions per layer between the sequence and 16 tokens, linear in N.
"""
from published_support import Stack, require, tokens

agent = require("agent_attention_pytorch")


def build_model():
    return Stack(lambda: agent.AgentSelfAttention(32, num_agent_tokens=16, dim_head=16,
                                                  heads=2), dim=32, depth=2)


def example_inputs(seq_len, batch=1):
    return tokens(seq_len, batch)
