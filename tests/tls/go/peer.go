// A crypto/tls peer for netpoll's TLS tests: a server that echoes (or
// streams a pattern both ways) and a client that does the same, printing
// each connection's negotiated state.
package main

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

var (
	mode       = flag.String("mode", "server", "server or client")
	certFile   = flag.String("cert", "", "certificate chain (PEM)")
	keyFile    = flag.String("key", "", "private key (PEM)")
	caFile     = flag.String("ca", "", "CA to trust (PEM)")
	addr       = flag.String("addr", "127.0.0.1:0", "listen or dial address")
	maxVersion = flag.String("max", "1.3", "highest TLS version: 1.2 or 1.3")
	alpn       = flag.String("alpn", "", "ALPN protocols, comma-separated")
	clientAuth = flag.Bool("clientauth", false, "server: require and verify a client certificate")
	sni        = flag.String("sni", "localhost", "client: server name")
	conns      = flag.Int("n", 1, "connections to serve or make")
	bulk       = flag.Int("bulk", 0, "bytes to send each way instead of echoing")
)

func fail(err error) {
	fmt.Println("ERROR", err)
	os.Exit(1)
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func state(c *tls.Conn) {
	st := c.ConnectionState()
	v := map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[st.Version]
	peer := "-"
	if len(st.PeerCertificates) > 0 {
		peer = strings.Join(st.PeerCertificates[0].DNSNames, ",")
	}
	fmt.Printf("STATE version=%s alpn=%s sni=%s resumed=%v peer=%s\n", v, st.NegotiatedProtocol, st.ServerName, st.DidResume, peer)
}

// exchange streams the pattern out while hashing what comes in; the
// writing side ends with close_notify (CloseWrite).
func exchange(c *tls.Conn) {
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(pattern(*bulk))
		if err == nil {
			err = c.CloseWrite()
		}
		done <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		fail(err)
	}
	if err := <-done; err != nil {
		fail(err)
	}
	fmt.Printf("GOT %d %s\n", n, hex.EncodeToString(h.Sum(nil)))
}

func config() *tls.Config {
	cfg := &tls.Config{MaxVersion: tls.VersionTLS13}
	if *maxVersion == "1.2" {
		cfg.MaxVersion = tls.VersionTLS12
	}
	if *alpn != "" {
		cfg.NextProtos = strings.Split(*alpn, ",")
	}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fail(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fail(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg.RootCAs, cfg.ClientCAs = pool, pool
	}
	return cfg
}

func main() {
	flag.Parse()
	cfg := config()
	if *mode == "server" {
		if *clientAuth {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		ln, err := tls.Listen("tcp", *addr, cfg)
		if err != nil {
			fail(err)
		}
		fmt.Println("LISTEN", ln.Addr().(*net.TCPAddr).Port)
		for i := 0; i < *conns; i++ {
			nc, err := ln.Accept()
			if err != nil {
				fail(err)
			}
			c := nc.(*tls.Conn)
			if err := c.Handshake(); err != nil {
				fmt.Println("HANDSHAKE-ERROR", err)
				c.Close()
				continue
			}
			state(c)
			if *bulk > 0 {
				exchange(c)
			} else {
				if _, err := io.Copy(c, c); err != nil {
					fail(err)
				}
				if err := c.CloseWrite(); err != nil {
					fail(err)
				}
				fmt.Println("EOF")
			}
			c.Close()
		}
		return
	}
	cfg.ServerName = *sni
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	for i := 0; i < *conns; i++ {
		c, err := tls.Dial("tcp", *addr, cfg)
		if err != nil {
			fail(err)
		}
		state(c)
		if *bulk > 0 {
			exchange(c)
		} else {
			fmt.Fprintf(c, "ping %d\n", i)
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				fail(err)
			}
			fmt.Print("REPLY ", line)
			if err := c.CloseWrite(); err != nil {
				fail(err)
			}
			if _, err := io.Copy(io.Discard, c); err != nil {
				fail(err)
			}
			fmt.Println("EOF")
		}
		c.Close()
	}
}
