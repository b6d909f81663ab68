"""The demo's Debian code path (what ``make demo`` runs), quickly: a short
warm-up and two clones."""

import os

from nova_live_snapshot import conf as conf_mod
from nova_live_snapshot import demo


def test_demo_fills_every_identity_row_with_distinct_values(
        bed, debian_guest_dir):
    """The source and both clones report every identity column from
    inside (MAC, hostname, SSH host key, machine-id, address), no two
    guests share a value in any column, every clone resumed the source's
    workload, and the report shows both times and the rows."""
    conf = conf_mod.derive(bed.conf, test_guest_dir=debian_guest_dir,
                           image_dir=os.path.join(bed.root, 'demo-images'),
                           clone_dir=os.path.join(bed.root, 'demo-clones'))
    messages = []
    result = demo.run(conf, clones=2, netns=bed.netns, warm_cpu_s=2,
                      progress=messages.append)
    rows = [result['source']['identity']] + [
        c['identity'] for c in result['clones']]
    assert len(rows) == 3
    for column in ('mac', 'hostname', 'ssh_host_key', 'machine_id',
                   'address'):
        values = [row[column] for row in rows]
        assert all(values), (column, values)
        assert len(set(values)) == 3, (column, values)
    assert all(c['resumed'] for c in result['clones'])
    assert result['cold_to_ready_s'] > result['cold_warmup_s'] > 0
    assert result['clone_to_ready_s'] > 0
    text = demo.format_report(result)
    assert 'ratio cold / clone' in text
    for row in rows:
        assert row['machine_id'] in text and row['mac'] in text
    assert os.listdir(conf.clone_dir) == []
