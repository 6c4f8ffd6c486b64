"""Two images packed into one sequence, each attending to its own patches
(vit-pytorch's NaViT: ``image_ids`` from ``torch.repeat_interleave`` over
each image's patch count, a mask of equal ids), behind a check that the
length is a Python int, as a type-checked signature makes it: the model
is traced at fixed lengths.  The packed length is a size read from data
(``repeat_interleave`` by a tensor of counts)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_HEAD = 2, 16
DIM = HEADS * DIM_HEAD


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, x):
        b, n, _ = x.shape
        if not isinstance(n, int):
            raise TypeError(f"the length must be an int, not {type(n).__name__}")
        counts = torch.tensor([n // 2, n - n // 2])
        image_ids = torch.repeat_interleave(torch.arange(2), counts)
        mask = image_ids[:, None] == image_ids[None, :]
        # a per-image gain spread over each image's patches, read as a mean:
        # a tensor as long as the data says, met by no size of N
        gain = torch.repeat_interleave(torch.tensor([1.0, 0.5]), counts).mean()
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, DIM_HEAD).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, DIM)) * gain


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
