"""The README's transfer configs, read out of README.md, are complete recipes.

Each ```python block of the README that starts from a stock config
(``_base_ = 'mmdet::...'`` / ``'mmseg::...'``) is written to a file as it
stands, with only its ``Pretrained`` checkpoint pointed at a converted
official-layout checkpoint (random values), and must:

* keep the stock backbone's ``frozen_stages`` and ``norm_eval``;
* feed the official input convention, so ``tools/train.py``'s check of the
  converted file passes;
* load no weights from the network (mmseg: ``model.pretrained=None``);
* build, and initialise with every tensor of the converted file.
"""
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from acon_mm.engine.input_convention import check_input_convention
from acon_mm.engine.run_checks import (
    check_pretrained_files,
    check_remote_weights,
    find_remote_weights,
)
from acon_mm.engine.runner_utils import register_task_modules
from acon_mm.models.official_ckpt import OFFICIAL_INPUT_CONVENTION, convert_checkpoint

from official_reference import load_layouts, random_official_state_dict

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONVERTED = 'checkpoints/resnet50_metaacon_mm.pth'


def readme_configs():
    """``{task: config text}`` of the README's stock-config blocks."""
    with open(osp.join(ROOT, 'README.md')) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)
    found = {}
    for block in blocks:
        m = re.search(r"^_base_ = '(mmdet|mmseg)::", block, flags=re.M)
        if m:
            found[m.group(1)] = block
    return found


def test_the_readme_shows_a_detection_and_a_segmentation_config():
    assert set(readme_configs()) == {'mmdet', 'mmseg'}


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    sd = random_official_state_dict(load_layouts()['resnet50_metaacon'], seed=0)
    tmp = tmp_path_factory.mktemp('readme')
    src = tmp / 'official.pth'
    torch.save({'state_dict': sd}, str(src))
    dst = tmp / 'resnet50_metaacon_mm.pth'
    convert_checkpoint(str(src), str(dst), verbose=False)
    return str(dst)


@pytest.mark.parametrize('task', ['mmdet', 'mmseg'])
def test_a_readme_config_is_a_complete_transfer_recipe(task, converted, tmp_path):
    text = readme_configs()[task]
    assert CONVERTED in text
    path = tmp_path / 'readme_config.py'
    path.write_text(text.replace(CONVERTED, converted))
    cfg = Config.fromfile(str(path))
    stock_file = tmp_path / 'stock.py'
    stock_file.write_text(re.search(r"^_base_ = '.*?'$", text, flags=re.M).group(0) + '\n')
    stock = Config.fromfile(str(stock_file))

    bb, stock_bb = cfg.model.backbone, stock.model.backbone
    assert bb.type == 'ResNetACON' and bb.acon_cfg.type == 'MetaAconC'
    for key, default in (('frozen_stages', -1), ('norm_eval', False)):
        assert bb.get(key, default) == stock_bb.get(key, default), key
    assert find_remote_weights(cfg) == []
    check_remote_weights(cfg)  # nothing to download
    check_pretrained_files(cfg)
    dp = cfg.model.data_preprocessor
    assert (dp.mean, dp.std, dp.bgr_to_rgb) == (OFFICIAL_INPUT_CONVENTION['mean'],
                                                OFFICIAL_INPUT_CONVENTION['std'], False)
    # raises on a preprocessing that contradicts the file, warns if it records none
    assert check_input_convention(cfg, logger=None) == []
    assert cfg.optim_wrapper.constructor == 'AconOptimWrapperConstructor'

    register_task_modules(task)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    model.init_weights()
    want = torch.load(converted, map_location='cpu', weights_only=True)['state_dict']
    got = model.backbone.state_dict()
    assert set(want) <= set(got)
    assert all(torch.equal(got[k], v) for k, v in want.items())
