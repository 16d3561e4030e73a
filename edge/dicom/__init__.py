"""What speaks DICOM on the network or writes it: the storage SCP that receives studies
by C-STORE, the Mammography CAD SR builder and the C-STORE SCU that sends it.

    sender --C-STORE--> receiver (policy, spool) --IncomingFile--> the same intake as the
    watch folder
    study result --> CAD SR (cad_sr, cad_tree) --> delivery/ outbox --> scu --C-STORE--> PACS

The receiver acknowledges an instance only once it is durable in the spool
(``state_dir/spool``); from there it takes exactly the path of a watched file.
"""
