# An x86_64 program for tests/seccomp_arch.rs that makes x32 system calls (the number with bit 30
# set), which seccomp sees as AUDIT_ARCH_X86_64 with that bit. x32's getpid must pass the filter:
# then it returns a pid, or ENOSYS on a kernel without CONFIG_X86_X32_ABI. The exit status is the
# errno x32's getppid got (0 when it was allowed).
# Built by the test: as --64 x32.S -o x32.o && ld -static x32.o -o x32
        .set    X32, 0x40000000
        .text
        .globl  _start
_start:
        movl    $(X32 + 39), %eax       # x32 getpid
        syscall
        cmpq    $-38, %rax              # ENOSYS: x32 is not built into this kernel
        je      passed
        testq   %rax, %rax
        jle     fail
passed:
        movl    $1, %eax                # write(1, msg, len), x86_64's
        movl    $1, %edi
        leaq    msg(%rip), %rsi
        movl    $len, %edx
        syscall
        cmpq    $len, %rax
        jne     fail
        movl    $(X32 + 110), %eax      # x32 getppid
        syscall
        negl    %eax
        movl    %eax, %edi
        movl    $60, %eax               # exit(errno of getppid)
        syscall
fail:
        movl    $99, %edi
        movl    $60, %eax               # exit(99)
        syscall

        .data
msg:    .ascii  "x32 getpid passed\n"
        len = . - msg
