"""Personal data: sealed in the ledger under a key per subject, opened on the way out.

With a master key configured (``security.master_key_file`` or ``SCR_MASTER_KEY_FILE``), the
personal fields of each event (``fields``) are stored as AES-256-GCM ciphertext under a data
key of its subject, the tenant's user (``subjects``), which the master key wraps
(``master``). The ledger leaf holds the ciphertext and a salted commitment to the plaintext
(``sealing``), so destroying the subject's key erases the data while every hash, proof and
checkpoint stays valid.
"""
