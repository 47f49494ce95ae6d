"""Teacher model registry.

``TEACHERS`` maps a model name (paddlenlp names such as ``ernie-3.0-tiny-base-v2-zh``, ``ernie-gram-zh``)
to a builder ``build(heads, init="scratch", vocab_size=None, **options) -> model`` that returns a
``paddle.nn.Layer`` obeying the output contract in ``distill/modeldir.py``.
"""
from tinydistill.distill.registry import Registry

# The Bi-LSTM and TextCNN register here too: any trained model can teach, e.g. the members of an ensemble of
# independently trained small models (Tang et al.'s protocol without a pretrained teacher).
TEACHERS = Registry("teacher", modules=("tinydistill.teachers.ernie", "tinydistill.students.bilstm", "tinydistill.students.textcnn"))
