"""``harness repro``: the high-order allocation failure the non-LRU movable page API
exists to prevent, reproduced the way a user meets it.

``experiment`` fragments a guest's memory with the sample driver's pages and makes
one order-N allocation as a driver does (GFP_KERNEL); ``outcome`` judges what
happened (pure); ``cli`` boots, prints, writes repro.json and leaves the user in
the guest's shell.
"""
