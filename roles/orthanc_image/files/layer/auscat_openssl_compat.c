/*
 * libssl.so for Orthanc's HTTP server on Debian.
 *
 * Debian's civetweb (1.16, Orthanc's embedded HTTP server) opens "libssl.so" at run time and
 * looks up SSL_get_peer_certificate, which OpenSSL 3 provides only as a macro for
 * SSL_get1_peer_certificate. The lookup returns NULL and the first HTTPS request makes a
 * civetweb worker call address 0 (SIGSEGV). This library is what civetweb opens instead: it
 * depends on libssl.so.3, so every other lookup finds OpenSSL's own function, and it adds the
 * missing one with its OpenSSL 1.1 meaning (a new reference the caller frees).
 */
#include <openssl/ssl.h>

#undef SSL_get_peer_certificate

X509 *SSL_get_peer_certificate(const SSL *ssl);

X509 *SSL_get_peer_certificate(const SSL *ssl)
{
    return SSL_get1_peer_certificate(ssl);
}
