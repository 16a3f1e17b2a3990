"""Inception-ResNet-v1 (Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning", AAAI 2017), in the widely used FaceNet layout: stem, 5×Block35,
Reduction-A, 10×Block17, Reduction-B, 5×Block8 (+1 without ReLU), pooled to a 512-d embedding.

Its public PyTorch weights are facenet-pytorch's (timesler/facenet-pytorch), converted from David
Sandberg's TensorFlow FaceNet: trained on VGGFace2 (faces), not ImageNet; no ImageNet weights of
Inception-ResNet-*v1* were ever released. :func:`from_reference` maps that file's key names.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicConv2d(nn.Sequential):
    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(cout, eps=0.001, momentum=0.1),
            nn.ReLU(inplace=False),
        )


class Block35(nn.Module):
    def __init__(self, scale=0.17):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(256, 32, 1)
        self.branch1 = nn.Sequential(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(
            BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1), BasicConv2d(32, 32, 3, padding=1)
        )
        self.conv2d = nn.Conv2d(96, 256, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.conv2d(torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1))
        return self.relu(x + self.scale * out)


class Block17(nn.Module):
    def __init__(self, scale=0.10):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(896, 128, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(896, 128, 1),
            BasicConv2d(128, 128, (1, 7), padding=(0, 3)),
            BasicConv2d(128, 128, (7, 1), padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(256, 896, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.conv2d(torch.cat([self.branch0(x), self.branch1(x)], 1))
        return self.relu(x + self.scale * out)


class Block8(nn.Module):
    def __init__(self, scale=0.20, relu=True):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(1792, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(1792, 192, 1),
            BasicConv2d(192, 192, (1, 3), padding=(0, 1)),
            BasicConv2d(192, 192, (3, 1), padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1792, 1)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x):
        out = self.conv2d(torch.cat([self.branch0(x), self.branch1(x)], 1))
        return self.relu(x + self.scale * out)


class Mixed6a(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, stride=2)
        self.branch1 = nn.Sequential(
            BasicConv2d(256, 192, 1), BasicConv2d(192, 192, 3, padding=1), BasicConv2d(192, 256, 3, stride=2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Mixed7a(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, stride=2))
        self.branch2 = nn.Sequential(
            BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, padding=1), BasicConv2d(256, 256, 3, stride=2)
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


# facenet-pytorch's stem modules, in the order of this module's ``stem`` Sequential
_REFERENCE_STEM = ["conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b"]
_PARAMS = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


def reference_key(key: str) -> str:
    """facenet-pytorch's name for this module's state-dict ``key``.

    Two differences: the stem is one Sequential here (named attributes there), and BasicConv2d is a
    Sequential (conv, bn, relu) here, attributes ``conv``/``bn`` there. Every digit directly before
    a parameter name is a BasicConv2d's position (blocks' own convolutions are named ``conv2d``).
    """
    parts = key.split(".")
    if parts[0] == "stem":
        parts = [_REFERENCE_STEM[int(parts[1])], *parts[2:]]
    if len(parts) >= 2 and parts[-1] in _PARAMS and parts[-2] in ("0", "1"):
        parts[-2] = "conv" if parts[-2] == "0" else "bn"
    return ".".join(parts)


class InceptionResNetV1(nn.Module):
    """Backbone returning the 512-d batch-normalised embedding (``num_features``)."""

    min_img_size = 75
    # facenet-pytorch's fixed_image_standardization: (x * 255 - 127.5) / 128
    input_normalization = {"mean": [127.5 / 255] * 3, "std": [128 / 255] * 3}
    reference = {
        "url": "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
        "repository": "https://github.com/timesler/facenet-pytorch",
        "pretraining": "VGGFace2 (face recognition, 3.3 M images of 9,131 people); no ImageNet weights exist",
    }

    def __init__(self, dropout: float = 0.6):
        super().__init__()
        self.num_features = 512
        self.stem = nn.Sequential(
            BasicConv2d(3, 32, 3, stride=2),
            BasicConv2d(32, 32, 3),
            BasicConv2d(32, 64, 3, padding=1),
            nn.MaxPool2d(3, stride=2),
            BasicConv2d(64, 80, 1),
            BasicConv2d(80, 192, 3),
            BasicConv2d(192, 256, 3, stride=2),
        )
        self.repeat_1 = nn.Sequential(*[Block35() for _ in range(5)])
        self.mixed_6a = Mixed6a()
        self.repeat_2 = nn.Sequential(*[Block17() for _ in range(10)])
        self.mixed_7a = Mixed7a()
        self.repeat_3 = nn.Sequential(*[Block8() for _ in range(5)])
        self.block8 = Block8(relu=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=0.001, momentum=0.1)

    def from_reference(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """facenet-pytorch's state dict (``InceptionResnetV1(pretrained='vggface2').state_dict()``) in
        this module's key names; its face-identity ``logits`` layer is dropped."""
        out = {}
        for key, own in self.state_dict().items():
            ref = reference_key(key)
            if ref in state:
                out[key] = state[ref]
            elif key.endswith("num_batches_tracked"):  # files saved before PyTorch 0.4.1 lack the counter
                out[key] = torch.zeros_like(own)
        return out

    def forward(self, x):
        x = self.stem(x)
        x = self.block8(self.repeat_3(self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x))))))
        x = self.dropout(self.avgpool(x).flatten(1))
        return self.last_bn(self.last_linear(x))
