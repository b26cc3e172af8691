/* device.h — finding out whether a CUDA GPU is usable, without linking the driver. */
#ifndef FTC_DEVICE_H
#define FTC_DEVICE_H

/* Number of CUDA devices usable now (0 where there is no driver or no GPU); `why` gets a
 * short reason when it is 0. */
int rt_gpu_count(char *why, int cap);

#endif
