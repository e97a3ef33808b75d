require outpost-kernel.inc
