"""Shared test settings.

One thread for torch and BLAS: the tests use small arrays, where thread start-up and
oversubscription on a shared 2-core machine cost far more (10-50x measured) than they save.
"""
import torch
from threadpoolctl import threadpool_limits

torch.set_num_threads(1)
threadpool_limits(1)
