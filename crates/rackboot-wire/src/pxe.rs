//! PXE client classification (RFC 4578 options 93/94/97, vendor class 60, iPXE user class 77 / option 175).
