"""What speaks DICOM on the network: the storage SCP that receives studies by C-STORE.

    sender --C-STORE--> receiver (policy, spool) --IncomingFile--> the same intake as the
    watch folder

The receiver acknowledges an instance only once it is durable in the spool
(``state_dir/spool``); from there it takes exactly the path of a watched file.
"""
