"""Trainers; ``utils.get_trainer`` picks ``<Model>Trainer`` from here, else :class:`InductiveTrainer`."""

from recbole_specgr.trainer.inductive_trainer import InductiveTrainer
from recbole_specgr.trainer.rqvae_trainer import RQVAETrainer
from recbole_specgr.trainer.s3rec_trainer import S3RecTrainer
from recbole_specgr.trainer.specgraux_trainer import SpecGRAuxTrainer
from recbole_specgr.trainer.specgrpp_trainer import SpecGRPPTrainer

__all__ = ["InductiveTrainer", "RQVAETrainer", "S3RecTrainer", "SpecGRAuxTrainer", "SpecGRPPTrainer"]
