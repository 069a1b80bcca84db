"""Mask2Former's masked-attention transformer decoder.

Learned queries go through layers of (masked cross-attention to one scale of the pixel
decoder's maps, self-attention, FFN), visiting the scales round-robin coarse to fine. Before
the first layer and after every layer the queries predict class logits and mask logits (dot
product with the per-pixel mask features); each layer's cross-attention is restricted to the
pixels where the previous prediction's mask is on (sigmoid >= 0.5).
"""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from detectron2.utils.registry import Registry
from torch import nn

from ..position_encoding import PositionEmbeddingSine
from .decoder_layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """Mask2Former transformer decoders: built with
(cfg, in_channels, mask_classification) and called with (multi-scale maps, mask features, mask)."""


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True) -> nn.Module:
    """The decoder named by MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    try:
        decoder_class = TRANSFORMER_DECODER_REGISTRY.get(name)
    except KeyError as error:
        raise ValueError(
            f"MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME={name!r} is not registered; "
            f"registered: {sorted(name for name, _ in TRANSFORMER_DECODER_REGISTRY)}"
        ) from error
    return decoder_class(cfg, in_channels, mask_classification)


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Args:
    in_channels: channels of the pixel decoder's multi-scale maps.
    mask_classification: predict class logits (always True for Mask2Former).
    num_classes: classes without "no object" (the class head has num_classes + 1 outputs).
    hidden_dim: query width; num_queries: number of queries; nheads: attention heads;
    dim_feedforward: FFN width; dec_layers: decoder layers (MODEL.MASK_FORMER.DEC_LAYERS - 1);
    pre_norm: pre-norm layers; mask_dim: channels of the mask features;
    enforce_input_project: 1x1 projection of the maps even when in_channels == hidden_dim.
    dropout: dropout of the decoder layers; 0.0 when built from a config, as Mask2Former.
    """

    NUM_FEATURE_LEVELS = 3

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder needs mask_classification=True")
        if hidden_dim % nheads:
            raise ValueError(
                f"MODEL.MASK_FORMER.HIDDEN_DIM={hidden_dim} must be divisible by "
                f"MODEL.MASK_FORMER.NHEADS={nheads}"
            )
        if dec_layers < 1:
            raise ValueError(
                "MODEL.MASK_FORMER.DEC_LAYERS must be >= 2 (one decoder layer), got "
                f"{dec_layers + 1}"
            )
        self.mask_classification = mask_classification
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout, pre_norm) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout, pre_norm) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout, pre_norm) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # initial query content
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # query position embedding
        self.level_embed = nn.Embedding(self.NUM_FEATURE_LEVELS, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.NUM_FEATURE_LEVELS):
            if in_channels != hidden_dim or enforce_input_project:
                projection = Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(projection)
                self.input_proj.append(projection)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool) -> dict:
        mf = cfg.MODEL.MASK_FORMER
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            # the first prediction (from the initial queries) counts as one of DEC_LAYERS
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            # no "dropout": Mask2Former's decoder layers hard-code 0.0 (MODEL.MASK_FORMER.DROPOUT
            # is the pixel decoder's)
        }

    def forward(
        self,
        x: list[torch.Tensor],
        mask_features: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> dict:
        """x: 3 maps (N, in_channels, H_l, W_l), coarse to fine; mask_features: (N, mask_dim,
        H, W). Returns {"pred_logits": (N, Q, K + 1), "pred_masks": (N, Q, H, W),
        "aux_outputs": [{"pred_logits", "pred_masks"} of every earlier prediction]}."""
        if len(x) != self.NUM_FEATURE_LEVELS:
            raise ValueError(
                f"MultiScaleMaskedTransformerDecoder: expected {self.NUM_FEATURE_LEVELS} "
                f"multi-scale maps, got {len(x)}"
            )
        src, pos, size_list = [], [], []
        for level in range(self.NUM_FEATURE_LEVELS):
            size_list.append(x[level].shape[-2:])
            # (N, C, H, W) -> (H*W, N, C)
            pos.append(self.pe_layer(x[level]).flatten(2).permute(2, 0, 1))
            projected = self.input_proj[level](x[level]).flatten(2)
            src.append((projected + self.level_embed.weight[level][None, :, None]).permute(2, 0, 1))
        batch = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)

        predictions_class, predictions_mask = [], []
        outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
            output, mask_features, size_list[0]
        )
        predictions_class.append(outputs_class)
        predictions_mask.append(outputs_mask)
        for i in range(self.num_layers):
            level = i % self.NUM_FEATURE_LEVELS
            # a query whose mask is empty at this scale attends everywhere instead of nowhere
            attn_mask[attn_mask.all(-1)] = False
            output = self.transformer_cross_attention_layers[i](
                output, src[level], memory_mask=attn_mask, pos=pos[level], query_pos=query_embed
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
            output = self.transformer_ffn_layers[i](output)
            outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
                output, mask_features, size_list[(i + 1) % self.NUM_FEATURE_LEVELS]
            )
            predictions_class.append(outputs_class)
            predictions_mask.append(outputs_mask)
        return {
            "pred_logits": predictions_class[-1],
            "pred_masks": predictions_mask[-1],
            "aux_outputs": [
                {"pred_logits": c, "pred_masks": m}
                for c, m in zip(predictions_class[:-1], predictions_mask[:-1])
            ],
        }

    def forward_prediction_heads(
        self, output: torch.Tensor, mask_features: torch.Tensor, attn_mask_target_size
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """output: queries (Q, N, C). Returns class logits (N, Q, K + 1), mask logits (N, Q,
        H, W) and the next cross-attention mask, True = blocked: (N * heads, Q, h * w), or
        (Q, h * w) for all heads when N is 1."""
        decoder_output = self.decoder_norm(output).transpose(0, 1)
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)
        outputs_mask = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        attn_mask = F.interpolate(
            outputs_mask, size=attn_mask_target_size, mode="bilinear", align_corners=False
        )
        attn_mask = (attn_mask.sigmoid().flatten(2) < 0.5).detach()
        if attn_mask.shape[0] == 1:
            # nn.MultiheadAttention broadcasts a 2-d mask over the heads: one image's mask
            # need not be copied per head (at 1024 x 1024 its float form is 105 MB a layer)
            return outputs_class, outputs_mask, attn_mask[0]
        # several images: one mask per (image, head), image-major, as the attention wants
        attn_mask = attn_mask.unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1)
        return outputs_class, outputs_mask, attn_mask
