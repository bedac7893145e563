"""AWS IoT Core through boto3: the account set-up of a fleet (policies, provisioning templates,
their IAM role, a claim certificate, the endpoint and Amazon's roots), certificates from a
board's CSR with the check that they carry the board's key, things, bring-your-own CA, the
certificate registry and rotation jobs. Imports the base modules and `pki` only (never `board`,
`emu` or `cloud`); what needs both a board and AWS is in `upcert.provision_aws`.
"""
