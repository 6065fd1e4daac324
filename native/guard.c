/* guard.c - surviving guest memory that vanishes under the data plane.
 *
 * A DMA_MAP region is a file the client shares with us.  If the client
 * shrinks that file later (a memfd without F_SEAL_SHRINK, a file on
 * /dev/shm), the pages behind our mapping are gone and the next access
 * raises SIGBUS, which would kill the whole server.  The threads that touch
 * guest memory (the pair workers and the control worker) run guarded: a
 * SIGBUS on a guarded thread jumps back to the top of that thread, which
 * fails the device (VNIC_ERR_MEM_FAULT, NEEDS_RESET, counted in mem_faults)
 * and waits for the reset.  A SIGBUS anywhere else is not ours and goes on
 * to the handler that was installed before, or kills the process as it
 * would have without us.  No guest memory is touched with a lock held, so
 * jumping out of an access leaves no lock behind. */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include "internal.h"

/* Set by each guarded thread before it touches guest memory, so that the
 * handler never is the first to reach (and allocate) a thread's copy. */
static __thread sigjmp_buf *guard_env;
static struct sigaction previous;
static pthread_once_t installed = PTHREAD_ONCE_INIT;

static void pass_on(int sig, siginfo_t *info, void *uc)
{
    if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction) {
        previous.sa_sigaction(sig, info, uc);
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
    } else {
        /* back to the default: the faulting access runs again and kills us */
        signal(sig, SIG_DFL);
    }
}

static void on_sigbus(int sig, siginfo_t *info, void *uc)
{
    sigjmp_buf *env = guard_env;
    if (env) {
        guard_env = NULL;          /* a fault while failing is not caught twice */
        siglongjmp(*env, 1);
    }
    pass_on(sig, info, uc);
}

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &previous);
}

void guard_install(void)
{
    pthread_once(&installed, install);
}

void guard_enter(sigjmp_buf *env)
{
    guard_env = env;
}

void guard_leave(void)
{
    guard_env = NULL;
}
