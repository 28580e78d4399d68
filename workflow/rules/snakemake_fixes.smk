# Workarounds for Snakemake bugs this workflow runs into; delete each once the pinned Snakemake has the fix.
import snakemake
import snakemake.dag
from collections import defaultdict
from snakemake.common import group_into_chunks


def _update_group_components(self):
    """Snakemake 9.27.1's DAG._update_group_components, but a chunk of --group-components becomes a new
    (cached) GroupJob instead of the chunk's first component grown in place, which the factory cache hands
    out again when the DAG is post-processed twice after a checkpoint (tests/test_slurm.py)."""
    groups_by_id = defaultdict(set)
    for group in self._group.values():
        groups_by_id[group.groupid].add(group)
    for groupid, conn_components in groups_by_id.items():
        lookup_id = self.workflow.parent_groupids.get(groupid, groupid)
        n_components = self.workflow.group_settings.group_components.get(lookup_id, 1)
        if n_components > 1:
            ordered = sorted(conn_components, key=lambda group: min(job.jobid for job in group.jobs))
            for chunk in group_into_chunks(n_components, ordered):
                if len(chunk) > 1:
                    merged = self.group_job_factory.new(
                        groupid, (job for group in chunk for job in group.jobs), self.workflow.global_resources)
                    for job in merged.jobs:
                        self._group[job] = merged
    for group in self._group.values():
        group.finalize()


if snakemake.__version__ == "9.27.1":
    snakemake.dag.DAG._update_group_components = _update_group_components
