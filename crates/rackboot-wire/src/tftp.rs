//! TFTP packets (RFC 1350), option negotiation (RFC 2347/2348/2349/7440) and netascii.
