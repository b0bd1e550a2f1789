__version__ = "0.1.0"
from . import methods  # registers every method file (tools/export.py keeps this line)

def cifar_teacher(control: bool = False):
    "The committed ResNet-20 teacher (or control teacher) of chapter 23's CPU tier, checked by SHA-256."
    from .zoo_cifar import cpu_teacher  # imported on first use: `import kdnotes` stays light
    return cpu_teacher(control)
