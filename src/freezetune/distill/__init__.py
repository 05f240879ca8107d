"""Knowledge distillation as a strategy: a student cut from the pretrained model, a finished
run as its teacher, the teacher's logits computed once, and the Hinton loss as an objective.

``config`` is torch-free (the run config imports it); the rest loads torch.
"""

from freezetune.distill.config import STUDY_TEACHER, DistillConfig

__all__ = ["STUDY_TEACHER", "DistillConfig"]
