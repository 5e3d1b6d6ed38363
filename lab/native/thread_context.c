/*
 * The writer side of the OpenTelemetry thread context (OTEP 4947), as an SDK publishes it: the
 * ELF TLS variable `otel_thread_ctx_v1`, exported in the dynamic symbol table, points to the
 * record of the context active on the thread (NULL: none). Records are built by the caller (the
 * lab's service, or a Python app through ctypes); this file only owns the variable, because
 * neither stable Rust nor Python can define an exported TLS symbol.
 *
 * Built into the lab binary (the linker relaxes the access to local-exec) and as shared
 * libraries in the TLSDESC and legacy general-dynamic dialects, so that the agent's reader is
 * tested against every access model the spec requires.
 */
#include <stddef.h>

/* Default visibility: a hidden symbol would be accessed local-dynamic, which the spec excludes. */
__attribute__((visibility("default"))) __thread void *otel_thread_ctx_v1 = NULL;

/* Publishes `record` (or NULL) for the calling thread. The spec's concurrency model is a
 * signal handler's: readers look only while the thread is stopped, so compiler fences around a
 * volatile store are all the ordering needed. */
void culprit_lab_thread_ctx_set(void *record)
{
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	*(void *volatile *)&otel_thread_ctx_v1 = record;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* The calling thread's variable, for tests that check where a reader finds it. */
void **culprit_lab_thread_ctx_address(void)
{
	return &otel_thread_ctx_v1;
}
