"""Drills of audit-network-incident (plan 4): the triage form picks the hardware / software / network / virus branch."""

from tests.drill import drill, path, skipped

RB = "audit-network-incident"


def triage(kind, major=False):
    return {"fault_type": kind, "major_impact": major, "description": f"{kind} fault in the audit LAN"}


def test_hardware_unrepairable_server_goes_to_vendor_egov_and_security_meeting():
    answers = {"triage": triage("hardware", major=True),
               "hw-repair-on-site": {"repaired": False, "server_side": True, "needs_sending": True, "device": "file server"},
               "hw-remove-disk": {"disk_removed": False},
               "hw-vendor-repair": {"vendor_called": True, "sent_out": False, "restored": False},
               "hw-security-meeting": {"damage": "RAID controller and two disks", "decision": "replace the server"}}
    state, record = drill(RB, answers, auto=True)
    ran = path(record)
    assert ["report-to-leading-group", "start-plan"] == [s for s in ran if s in ("report-to-leading-group", "start-plan")]
    assert {"hw-vendor-repair", "hw-disk-warning", "hw-notify-egov", "hw-security-meeting"} <= set(ran)
    assert not {"sw-backup-safe", "net-locate", "vi-isolate"} & set(ran)
    assert "file server" in record.steps["hw-notify-egov"]["text"]
    assert record.steps["hw-security-meeting"]["decision"] == "replace the server"
    assert "report-upward" in ran
    assert record.outcome == "resolved"


def test_the_disk_comes_out_before_repair_and_the_egov_centre_is_told_at_once():
    """Defects: removing the disk was asked after the device went for repair; the e-gov centre heard only after the repair."""
    answers = {"triage": triage("hardware"),
               "hw-repair-on-site": {"repaired": False, "server_side": True, "needs_sending": True, "device": "PC-07"},
               "hw-remove-disk": {"disk_removed": True, "kept_by": "王科长"},
               "hw-vendor-repair": {"vendor_called": True, "sent_out": True, "restored": True}}
    state, record = drill(RB, answers, auto=True)
    ran = path(record)
    assert ran.index("hw-repair-on-site") < ran.index("hw-notify-egov") < ran.index("hw-remove-disk") < ran.index("hw-vendor-repair")
    assert "hw-disk-warning" in skipped(record)
    assert record.outcome == "resolved"


def test_hardware_fixed_on_site_stops_there():
    state, record = drill(RB, {"triage": triage("hardware")}, auto=True)
    ran = path(record)
    assert "hw-repair-on-site" in ran
    assert {"hw-vendor-repair", "hw-notify-egov", "hw-remove-disk", "hw-security-meeting"} <= set(skipped(record))
    assert "report-to-leading-group" in skipped(record) and "report-upward" in skipped(record)


def test_software_backup_first_then_developer():
    answers = {"triage": triage("software"),
               "sw-backup-safe": {"backup_moved": True, "backup_location": "PC-07 D:\\backup"},
               "sw-analyse": {"failing_node": "audit DB service", "fixed": False}}
    state, record = drill(RB, answers, auto=True)
    ran = path(record)
    assert ran.index("sw-backup-safe") < ran.index("sw-analyse") < ran.index("sw-call-developer") < ran.index("sw-developer-fixed")
    assert "audit DB service" in record.steps["sw-call-developer"]["text"]


def test_network_fault_inside_vs_outside():
    state, record = drill(RB, {"triage": triage("network"), "net-locate": {"location": "inside", "fault_point": "core switch port 12"}}, auto=True)
    assert "net-fix-inside" in path(record) and "net-call-outside" in skipped(record)
    state, record = drill(RB, {"triage": triage("network"), "net-locate": {"location": "outside", "fault_point": "e-gov uplink"}}, auto=True)
    ran = path(record)
    assert "net-call-outside" in ran and "net-outside-restored" in ran and "net-fix-inside" in skipped(record)
    assert record.steps["net-call-outside"]["sent"] >= 1


def test_virus_not_cleared_rebuilds_and_reports():
    answers = {"triage": triage("virus"),
               "vi-isolate": {"hosts_disconnected": 14, "source_address": "10.2.3.4"},
               "vi-analyse": {"attack_type": "ransomware worm", "path_cut": True, "machines_scanned": 60, "cleared": False}}
    state, record = drill(RB, answers, auto=True)
    ran = path(record)
    order = ["vi-isolate", "vi-block-source", "vi-analyse", "vi-rebuild", "vi-report"]
    assert [s for s in ran if s in order] == order
    assert record.steps["vi-block-source"]["result"]["args"]["address"] == "10.2.3.4"   # drill: recorded, not sent
    assert "重装" in record.steps["vi-report"]["text"]
    assert "report-upward" in ran
    assert record.outcome == "resolved"


def test_virus_cleared_skips_the_rebuild():
    answers = {"triage": triage("virus"), "vi-isolate": {"hosts_disconnected": 2, "source_address": "10.2.3.5"},
               "vi-analyse": {"attack_type": "macro virus", "path_cut": True, "machines_scanned": 60, "cleared": True}}
    state, record = drill(RB, answers, auto=True)
    assert "vi-rebuild" in skipped(record)
    assert "已清除" in record.steps["vi-report"]["text"]


def test_leading_group_declines_to_start_the_plan():
    state, record = drill(RB, {"triage": triage("software", major=True), "start-plan": {"decision": "reject"}}, auto=True)
    assert "approval.rejected" in record.kinds()
    assert "sw-analyse" in path(record)          # the working group carries on
    assert record.outcome == "resolved"
