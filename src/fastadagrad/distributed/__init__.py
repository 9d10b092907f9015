"""fastadagrad.distributed: AdaGrad state sharded across the ranks of an MPI communicator.

For NumPy code that outgrows one machine. MPI (through mpi4py) is the transport; fastadagrad
only adds the per-shard kernels and a fixed, documented order of every floating-point sum, so
that results are bit-identical to one process, for every world size:

- `ShardedEmbedding`: an (n_rows, dim) table and its AdaGrad accumulator (element-wise or
  row-wise) split by rows across the ranks (a pluggable `Partition`). `lookup(indices)` fetches
  the rows a rank's batch needs; `step(indices, grads)` routes each (index, gradient row) to its
  owner with one `Alltoallv`, and the owner applies `fastadagrad.sparse_adagrad_update` to what it
  received, in rank order then position order: the same bytes as one process calling
  `sparse_adagrad_update` on the concatenation of all ranks' batches (rank 0's first).
- `ZeroAdaGrad`: dense AdaGrad with ZeRO stage 1: the parameters are replicated, the flat
  accumulator is split into one contiguous slice per rank. A step sums the ranks' grads in rank
  order ((g0 + g1) + g2 ...; not an MPI reduction, whose order is unspecified), each rank
  updates its slice with the fused kernel, and the slices are all-gathered.

Every call that takes input validates it on every rank first and then agrees with one small
collective: either every rank proceeds or every rank raises the same TypeError/ValueError
(naming the rank that saw the problem); no rank is left waiting in a collective and nothing is
written anywhere. Checkpoints: each rank writes its own shard (`save(path)`), `load(path)`
re-shards to the current world size and partition.

mpi4py is imported on first use (`pip install "fastadagrad[mpi]"`, plus an MPI library such as
Debian's `openmpi-bin libopenmpi-dev`); importing this module never needs it.
"""

from fastadagrad.distributed._comm import agree
from fastadagrad.distributed.embedding import ShardedEmbedding
from fastadagrad.distributed.partition import BlockPartition, CyclicPartition, Partition
from fastadagrad.distributed.zero import ZeroAdaGrad

__all__ = ["Partition", "BlockPartition", "CyclicPartition", "ShardedEmbedding", "ZeroAdaGrad",
           "agree"]
