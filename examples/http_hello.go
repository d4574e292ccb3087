// The same "Hello, World!" server as http_hello.py, on Go's net/http: the
// other baseline for bench/http_bench.py.
//
//	go run examples/http_hello.go [-addr 127.0.0.1:8080]
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
)

var body = []byte("Hello, World!")

func hello(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on (port 0 picks a free one)")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("serving http://%s\n", ln.Addr())
	log.Fatal(http.Serve(ln, http.HandlerFunc(hello)))
}
