"""Student model registry (same builder signature and output contract as ``teachers``).

The ERNIE 3.0 Tiny sizes are registered here too (they share the builder in ``teachers/ernie.py``);
the Bi-LSTM of Tang et al. and a TextCNN live in this package.
"""
from tinydistill.distill.registry import Registry

STUDENTS = Registry("student", modules=("tinydistill.teachers.ernie", "tinydistill.students.bilstm", "tinydistill.students.textcnn"))
