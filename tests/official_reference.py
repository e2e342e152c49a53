"""An independent functional re-implementation of the official ACON ImageNet networks.

Written from the architecture facts (``official_acon_architecture.md``), not from
acon_mm's modules: it reads an *official-layout* state dict (keys without the
``module.`` prefix, as in ``official_acon_layouts.json``) and runs the forward
pass with ``torch.nn.functional`` only, in eval mode (BatchNorm with running
statistics). It returns the official stage outputs: ResNet ``layer1``..``layer4``;
ShuffleNetV2 the three stages and ``conv_last``.

It also builds random official-layout state dicts from the layout file, which is
how the tests stand in for the official checkpoints (they cannot be downloaded).
"""
import gzip
import json
import math
import os
import re
from typing import TYPE_CHECKING, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:  # numpy is imported where it is used; only the annotations name it here
    import numpy as np

#: a gzipped copy of the published ``official_acon_layouts.json``
LAYOUTS_FILE = os.path.join(os.path.dirname(__file__),
                            'official_acon_layouts.json.gz')

StateDict = Dict[str, Tensor]


def load_layouts() -> Dict[str, Dict[str, List[int]]]:
    """``{network name: {key: shape}}`` of the 14 official networks."""
    with gzip.open(LAYOUTS_FILE, 'rt') as f:
        return json.load(f)['networks']


def random_official_state_dict(layout: Dict[str, Sequence[int]],
                               seed: int = 0) -> StateDict:
    """Random tensors in an official layout, scaled to keep activations finite.

    Conv weights ~ N(0, 1/fan_in); BN: weight U(0.5, 1.5), bias N(0, 0.1),
    running_mean N(0, 0.1), running_var U(0.5, 2); ACON p1, p2 ~ N(0, 1),
    beta U(0.5, 2); ``num_batches_tracked`` an int64 scalar.
    """
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in layout.items():
        shape = tuple(shape)
        leaf = key.rsplit('.', 1)[-1]
        if leaf == 'num_batches_tracked':
            sd[key] = torch.tensor(1000 + seed, dtype=torch.int64)
            continue
        if leaf == 'weight' and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            t = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        elif leaf == 'weight' and len(shape) == 2:  # classifier
            t = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        elif leaf == 'weight':  # BN
            t = torch.rand(shape, generator=g) + 0.5
        elif leaf == 'running_var':
            t = torch.rand(shape, generator=g) * 1.5 + 0.5
        elif leaf in ('bias', 'running_mean'):
            t = torch.randn(shape, generator=g) * 0.1
        elif leaf in ('p1', 'p2'):
            t = torch.randn(shape, generator=g)
        elif leaf == 'beta':
            t = torch.rand(shape, generator=g) * 1.5 + 0.5
        else:
            raise KeyError(f'unexpected official key {key!r}')
        sd[key] = t
    return sd


# ---------------------------------------------------------------------------
# building blocks
def _conv(sd: StateDict, p: str, x: Tensor, stride: int = 1, padding: int = 0,
          groups: int = 1) -> Tensor:
    return F.conv2d(x, sd[p + '.weight'], sd.get(p + '.bias'), stride, padding,
                    1, groups)


def _bn(sd: StateDict, p: str, x: Tensor) -> Tensor:
    # eval-mode BatchNorm2d, eps 1e-5 (PyTorch defaults)
    mean = sd[p + '.running_mean'].view(1, -1, 1, 1)
    var = sd[p + '.running_var'].view(1, -1, 1, 1)
    w = sd[p + '.weight'].view(1, -1, 1, 1)
    b = sd[p + '.bias'].view(1, -1, 1, 1)
    return (x - mean) / torch.sqrt(var + 1e-5) * w + b


def _acon(sd: StateDict, p: str, x: Tensor) -> Tensor:
    """ACON-C (learned beta) or meta-ACON-C (beta from the input)."""
    p1, p2 = sd[p + '.p1'], sd[p + '.p2']
    if p + '.beta' in sd:
        beta = sd[p + '.beta']
    else:
        y = x.mean(dim=2, keepdim=True).mean(dim=3, keepdim=True)
        y = _bn(sd, p + '.bn1', _conv(sd, p + '.fc1', y))
        y = _bn(sd, p + '.bn2', _conv(sd, p + '.fc2', y))
        beta = torch.sigmoid(y)
    a = p1 * x - p2 * x
    return a * torch.sigmoid(beta * a) + p2 * x


def _dilated_conv(sd: StateDict, p: str, x: Tensor, dilation: int) -> Tensor:
    return F.conv2d(x, sd[p + '.weight'], sd.get(p + '.bias'), 1, dilation,
                    dilation)


# ---------------------------------------------------------------------------
# the official input (every official train.py)
def official_decode(path: str) -> 'np.ndarray':
    """PIL decodes RGB, the official code flips it to BGR: an ``(H, W, 3)`` uint8 array."""
    import numpy as np
    from PIL import Image
    rgb = np.asarray(Image.open(path).convert('RGB'))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def official_opencv_resize(bgr: 'np.ndarray', size: int = 256) -> 'np.ndarray':
    """The official ``OpencvResize``: short side to ``size``, long side
    ``int(size / short * long + 0.5)``, OpenCV ``INTER_LINEAR``."""
    import cv2
    h, w = bgr.shape[:2]
    if h <= w:
        nh, nw = size, int(size / h * w + 0.5)
    else:
        nh, nw = int(size / w * h + 0.5), size
    return cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)


def official_center_crop(bgr: 'np.ndarray', size: int = 224) -> 'np.ndarray':
    """Centre crop (offsets ``int(round((side - size) / 2))``)."""
    h, w = bgr.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return bgr[top:top + size, left:left + size]


def to_bgr_tensor(bgr: 'np.ndarray') -> Tensor:
    """The official ``ToBGRTensor``: BGR, ``float()`` of 0..255, (1, 3, H, W); no mean/std."""
    import numpy as np
    return torch.from_numpy(
        np.ascontiguousarray(bgr.transpose(2, 0, 1))).float()[None]


# ---------------------------------------------------------------------------
# ResNet
def resnet_forward(sd: StateDict, x: Tensor,
                   strides: Sequence[int] = (1, 2, 2, 2),
                   dilations: Sequence[int] = (1, 1, 1, 1),
                   contract_dilation: bool = False) -> List[Tensor]:
    """Official ACON ResNet-50/101/152: the outputs of layer1..layer4.

    ``strides``/``dilations`` run the same weights as a dilated network (the
    3x3 convs of stage i with dilation and padding ``dilations[i]``, the first
    block's halved with ``contract_dilation``, as mmseg's PSPNet backbones);
    the defaults are the official network.
    """
    x = F.relu(_bn(sd, 'bn1', _conv(sd, 'conv1', x, stride=2, padding=3)))
    x = F.max_pool2d(x, 3, 2, 1)
    outs = []
    for stage in range(1, 5):
        n = len({int(m.group(1)) for k in sd
                 for m in [re.match(rf'layer{stage}\.(\d+)\.', k)] if m})
        for j in range(n):
            p = f'layer{stage}.{j}'
            stride = strides[stage - 1] if j == 0 else 1
            dil = dilations[stage - 1]
            if j == 0 and contract_dilation and dil > 1:
                dil //= 2
            out = F.relu(_bn(sd, p + '.bn1',
                             _conv(sd, p + '.conv1', x, stride=stride)))
            out = _acon(sd, p + '.acon',
                        _bn(sd, p + '.bn2', _dilated_conv(
                            sd, p + '.conv2', out, dil)))
            out = _bn(sd, p + '.bn3', _conv(sd, p + '.conv3', out))
            if p + '.downsample.0.weight' in sd:
                identity = _bn(sd, p + '.downsample.1',
                               _conv(sd, p + '.downsample.0', x, stride=stride))
            else:
                identity = x
            x = F.relu(out + identity)
        outs.append(x)
    return outs


# ---------------------------------------------------------------------------
# ShuffleNetV2
def official_channel_shuffle(x: Tensor):
    """The official recipe: reshape (N*C/2, 2, H*W), permute, reshape (2, N, C/2, H, W)."""
    n, c, h, w = x.shape
    x = x.reshape(n * c // 2, 2, h * w)
    x = x.permute(1, 0, 2)
    x = x.reshape(2, -1, c // 2, h, w)
    return x[0], x[1]


def _branch_main(sd: StateDict, p: str, x: Tensor, stride: int) -> Tensor:
    mid = sd[p + '.3.weight'].shape[0]
    x = _acon(sd, p + '.2', _bn(sd, p + '.1', _conv(sd, p + '.0', x)))
    x = _bn(sd, p + '.4', _conv(sd, p + '.3', x, stride=stride, padding=1,
                                groups=mid))
    return _acon(sd, p + '.7', _bn(sd, p + '.6', _conv(sd, p + '.5', x)))


def _branch_proj(sd: StateDict, p: str, x: Tensor) -> Tensor:
    c = sd[p + '.0.weight'].shape[0]
    x = _bn(sd, p + '.1', _conv(sd, p + '.0', x, stride=2, padding=1, groups=c))
    return _acon(sd, p + '.4', _bn(sd, p + '.3', _conv(sd, p + '.2', x)))


def shufflenetv2_forward(sd: StateDict, x: Tensor) -> List[Tensor]:
    """Official ShuffleNetV2-ACON: outputs of stages 1, 2, 3 and ``conv_last``."""
    x = _acon(sd, 'first_conv.2',
              _bn(sd, 'first_conv.1', _conv(sd, 'first_conv.0', x, stride=2,
                                            padding=1)))
    x = F.max_pool2d(x, 3, 2, 1)
    outs = []
    k = 0
    for repeats in (4, 8, 4):
        for i in range(repeats):
            p = f'features.{k}'
            if i == 0:  # stride 2
                assert p + '.branch_proj.0.weight' in sd
                x = torch.cat((_branch_proj(sd, p + '.branch_proj', x),
                               _branch_main(sd, p + '.branch_main', x, 2)), 1)
            else:
                x_proj, x_main = official_channel_shuffle(x)
                x = torch.cat(
                    (x_proj, _branch_main(sd, p + '.branch_main', x_main, 1)),
                    1)
            k += 1
        outs.append(x)
    outs.append(_acon(sd, 'conv_last.2',
                      _bn(sd, 'conv_last.1', _conv(sd, 'conv_last.0', x))))
    return outs


def official_forward(sd: StateDict, x: Tensor, **resnet_kwargs) -> List[Tensor]:
    """Dispatch on the layout (``module.`` prefixes are stripped).

    ``resnet_kwargs`` (``strides``, ``dilations``, ``contract_dilation``) go to
    :func:`resnet_forward`.
    """
    sd = {k[len('module.'):] if k.startswith('module.') else k: v
          for k, v in sd.items()}
    if 'first_conv.0.weight' in sd:
        return shufflenetv2_forward(sd, x)
    return resnet_forward(sd, x, **resnet_kwargs)
